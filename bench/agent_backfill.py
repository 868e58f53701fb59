"""A first ``claude-usage-agent sync`` of a large transcript tree, beside ccusage reading it.

    .venv/bin/python -m bench.agent_backfill                  # a tree of about 300 MB
    .venv/bin/python -m bench.agent_backfill --megabytes 800

It writes a Claude Code config directory into a temporary directory: full transcript lines
(user prompts, tool results, one assistant line per content block repeating the message's
``id`` + ``requestId`` + ``usage``, message text included) in
``<dir>/projects/<cwd mangled>/<session>.jsonl``. Then, with one daphne on PostgreSQL + Redis:

1. a first ``claude-usage-agent sync`` of the whole tree (fresh state file), timed from start
   to exit, with the agent process's peak RSS; ``stats/`` must then count every distinct
   message written;
2. ``ccusage claude daily --json --offline`` (npm ``ccusage@20.0.24``, installed once into
   ``bench/.cache/ccusage``) on the same tree, timed the same way.

Targets (issue 5): the whole backfill into the server finishes faster than ccusage takes just
to read the tree, and the agent stays under 150 MB RSS whatever the tree size.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench.common import (
    API,
    REPO,
    BenchEnv,
    Client,
    Deadline,
    RecordFactory,
    prepare,
    print_machine,
    rate,
    servers,
    services_cpu,
    stop_on_sigterm,
    tree_pids,
)

CCUSAGE_VERSION = "20.0.24"
CCUSAGE_CACHE = REPO / "bench" / ".cache" / "ccusage"
AGENT = REPO / ".venv" / "bin" / "claude-usage-agent"
PYTHON = REPO / ".venv" / "bin" / "python"
TARGET_AGENT_RSS_MB = 150.0
MB = 1_000_000
POLL_SECONDS = 0.02
OTHER_BENCHMARK = "bench.read_api"
OTHER_BENCHMARK_WAIT_SECONDS = 600.0
# Filler text: prose and code-ish tokens, with quotes, backslashes and newlines that JSON
# escapes, as real prompts, answers and tool output have.
FILLER = (
    "the a to of and in is it for on with that this we be as at by from or an are not you "
    "function return const let value result error file path test config server client "
    "request response import export class def self None True False async await yield "
    "def main(): print(\"hello\") if x == 1: raise ValueError('bad') {} [] () => ; "
    "C:\\Users\\dev src/app.py line 42 TODO FIXME 0.25 1024 http://localhost:8000/api/"
)


@dataclass(frozen=True)
class Tree:
    root: Path  # the Claude config dir (CLAUDE_CONFIG_DIR)
    bytes: int
    files: int
    lines: int
    usage_lines: int  # assistant lines, i.e. lines that carry usage (copies included)
    messages: int  # distinct message ids


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: bytes
    stderr: bytes
    cpu_seconds: float  # user + system of the process and its children, from getrusage


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    stop_on_sigterm()
    deadline = Deadline(args.time_budget)
    env = BenchEnv(database=args.database, redis_url=args.redis_url)
    work = Path(tempfile.mkdtemp(prefix="agent-backfill-"))
    try:
        ccusage = _ccusage()
        if not args.no_wait:
            _wait_for_other_benchmarks(deadline)
        print_machine()
        tree = _write_tree(work / "claude", args.megabytes * MB, args.seed, args.days, deadline)
        agent, stats = _run_agent(env, tree, work, deadline, workers=args.workers)
        reader = _run_ccusage(ccusage, tree, work, deadline, stats) if ccusage else None
        return _report(tree, agent, reader)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        env.cleanup()


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=int, default=300, help="tree size in MB (10^6 B)")
    parser.add_argument("--days", type=float, default=60.0, help="records span the last D days")
    parser.add_argument("--seed", type=int, default=20251005)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="daphne processes of the server (default: backend.serve's, as make run)",
    )
    parser.add_argument("--database", default="backfill")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/7")
    parser.add_argument("--time-budget", type=float, default=1800.0, help="seconds, whole run")
    parser.add_argument(
        "--no-wait", action="store_true", help=f"do not wait for {OTHER_BENCHMARK} to finish"
    )
    args = parser.parse_args(argv)
    if args.megabytes < 1:
        parser.error("--megabytes must be at least 1")
    return args


def _wait_for_other_benchmarks(deadline: Deadline) -> None:
    """Timing beside another benchmark on 2 CPUs would measure the other one too."""
    end = time.monotonic() + OTHER_BENCHMARK_WAIT_SECONDS
    announced = False
    while time.monotonic() < end:
        deadline.check(f"waiting for {OTHER_BENCHMARK} to finish")
        found = subprocess.run(
            ["pgrep", "-f", OTHER_BENCHMARK], capture_output=True, text=True, timeout=30
        ).stdout.split()
        if not found:
            return
        if not announced:
            print(f"waiting (at most {OTHER_BENCHMARK_WAIT_SECONDS:.0f} s) for {OTHER_BENCHMARK}")
            announced = True
        time.sleep(5)
    print(f"warning: {OTHER_BENCHMARK} still running; measuring anyway")


# --- the transcript tree ----------------------------------------------------------------


def _mangle(cwd: str) -> str:
    """Claude Code's project directory name: every non-alphanumeric character becomes '-'."""
    return re.sub(r"[^A-Za-z0-9]", "-", cwd)


class _Text:
    """Random filler of a given length, cut from one pre-built pool (cheap per line)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        vocabulary = FILLER.split(" ")
        words = []
        for index in range(400_000):
            words.append(rng.choice(vocabulary))
            if index % 17 == 16:
                words.append("\n")
        self._pool = " ".join(words)

    def __call__(self, length: int) -> str:
        length = max(1, min(length, len(self._pool) - 1))
        start = self._rng.randrange(0, len(self._pool) - length)
        return self._pool[start : start + length]


class _TreeWriter:
    """Full Claude Code transcript lines around the usage records of a ``RecordFactory``."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed ^ 0x5EED)
        self.text = _Text(self.rng)
        self.bytes = self.files = self.lines = self.usage_lines = 0
        self.message_ids: set[str] = set()
        self._file: IO[bytes] | None = None
        self._session = ""
        self._parent: str | None = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def add(self, record: dict[str, Any]) -> None:
        """One assistant message: its prompt or tool result before it, its block copies."""
        if record["sessionId"] != self._session:
            self._open(record)
            self._write(self._prompt(record))
        elif self.rng.random() < 0.15:
            self._write(self._prompt(record))
        message = record["message"]
        blocks = self._blocks(message["stop_reason"] == "tool_use")
        moment = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
        for index, block in enumerate(blocks):
            line = {
                "parentUuid": self._parent,
                "isSidechain": record["isSidechain"],
                "userType": "external",
                "cwd": record["cwd"],
                "sessionId": record["sessionId"],
                "version": record["version"],
                "gitBranch": record["gitBranch"],
                "message": {
                    "id": message["id"],
                    "type": "message",
                    "role": "assistant",
                    "model": message["model"],
                    "content": [block],
                    "stop_reason": message["stop_reason"],
                    "stop_sequence": None,
                    "usage": message["usage"],
                },
                "requestId": record["requestId"],
                "type": "assistant",
                "uuid": record["uuid"] if index == 0 else self._uuid(),
                "timestamp": _iso(moment + timedelta(milliseconds=400 * index)),
            }
            self._write(line)
            self.usage_lines += 1
        self.message_ids.add(message["id"])
        last = blocks[-1]
        if last["type"] == "tool_use":
            self._write(self._tool_result(record, last["id"], moment + timedelta(seconds=3)))

    def _open(self, record: dict[str, Any]) -> None:
        self.close()
        folder = self.root / "projects" / _mangle(record["cwd"])
        folder.mkdir(parents=True, exist_ok=True)
        self._file = open(folder / f"{record['sessionId']}.jsonl", "wb")  # noqa: SIM115
        self._session = record["sessionId"]
        self._parent = None
        self.files += 1

    def _write(self, line: dict[str, Any]) -> None:
        assert self._file is not None
        data = orjson.dumps(line) + b"\n"
        self._file.write(data)
        self.bytes += len(data)
        self.lines += 1
        self._parent = str(line["uuid"])

    def _envelope(self, record: dict[str, Any]) -> dict[str, Any]:
        return {
            "parentUuid": self._parent,
            "isSidechain": record["isSidechain"],
            "userType": "external",
            "cwd": record["cwd"],
            "sessionId": record["sessionId"],
            "version": record["version"],
            "gitBranch": record["gitBranch"],
        }

    def _prompt(self, record: dict[str, Any]) -> dict[str, Any]:
        moment = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
        return {
            **self._envelope(record),
            "type": "user",
            "message": {"role": "user", "content": self.text(self._length(250, 1.0, 8000))},
            "uuid": self._uuid(),
            "timestamp": _iso(moment - timedelta(seconds=5)),
        }

    def _blocks(self, ends_with_tool: bool) -> list[dict[str, Any]]:
        """One to four content blocks, each written as its own line (its own copy)."""
        blocks: list[dict[str, Any]] = []
        if self.rng.random() < 0.25:
            blocks.append(
                {
                    "type": "thinking",
                    "thinking": self.text(self._length(600, 1.0, 12_000)),
                    "signature": self.text(300).replace(" ", "").replace("\n", ""),
                }
            )
        if self.rng.random() < 0.7 or not ends_with_tool:
            blocks.append({"type": "text", "text": self.text(self._length(300, 1.2, 10_000))})
        if ends_with_tool:
            for _ in range(1 if self.rng.random() < 0.8 else 2):
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": "toolu_01" + self._token(22),
                        "name": self.rng.choice(("Read", "Edit", "Bash", "Grep", "Write")),
                        "input": {
                            "file_path": "src/" + self._token(8) + ".py",
                            "content": self.text(self._length(250, 1.3, 20_000)),
                        },
                    }
                )
        return blocks

    def _tool_result(
        self, record: dict[str, Any], tool_use_id: str, moment: datetime
    ) -> dict[str, Any]:
        huge = self.rng.random() < 0.01  # a whole large file read now and then
        output = self.text(self.rng.randint(50_000, 200_000) if huge else self._length(1500))
        return {
            **self._envelope(record),
            "type": "user",
            "message": {
                "role": "user",
                "content": [{"tool_use_id": tool_use_id, "type": "tool_result", "content": output}],
            },
            "toolUseResult": {
                "stdout": output[: len(output) // 2],
                "stderr": "",
                "interrupted": False,
                "isImage": False,
            },
            "uuid": self._uuid(),
            "timestamp": _iso(moment),
        }

    def _length(self, median: float, sigma: float = 1.1, cap: int = 40_000) -> int:
        return max(8, min(int(self.rng.lognormvariate(0, sigma) * median), cap))

    def _uuid(self) -> str:
        hexed = f"{self.rng.getrandbits(128):032x}"
        return f"{hexed[:8]}-{hexed[8:12]}-4{hexed[13:16]}-a{hexed[17:20]}-{hexed[20:]}"

    def _token(self, width: int) -> str:
        alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        return "".join(self.rng.choices(alphabet, k=width))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def backfill_records(seed: int, days: float, estimate: int) -> Iterator[dict[str, Any]]:
    """Usage records, factory after factory (distinct salts), in case the estimate is low."""
    end = datetime.now(tz=UTC) - timedelta(minutes=5)
    for round_ in range(1000):
        factory = RecordFactory(seed=seed + round_)
        yield from factory.records(estimate, end=end, span=timedelta(days=days))
    raise RuntimeError("the tree writer never reached its size")


def _write_tree(root: Path, size: int, seed: int, days: float, deadline: Deadline) -> Tree:
    began = time.perf_counter()
    writer = _TreeWriter(root, seed)
    try:
        estimate = max(100, size // 8_000)  # about 8 kB of transcript per distinct message
        for record in backfill_records(seed, days, estimate):
            if writer.bytes >= size:
                break
            if writer.lines % 10_000 == 0:
                deadline.check("writing the transcript tree")
            writer.add(record)
    finally:
        writer.close()
    tree = Tree(
        root=root,
        bytes=writer.bytes,
        files=writer.files,
        lines=writer.lines,
        usage_lines=writer.usage_lines,
        messages=len(writer.message_ids),
    )
    print(
        f"\ntree: {tree.bytes / MB:,.1f} MB in {tree.files:,} files, {tree.lines:,} lines, "
        f"{tree.usage_lines:,} assistant lines (usage-bearing, block copies included), "
        f"{tree.messages:,} distinct messages over {days:g} days; "
        f"written in {time.perf_counter() - began:.1f} s"
    )
    return tree


# --- timed processes ----------------------------------------------------------------------


def _timed(
    command: Sequence[str], env: dict[str, str], work: Path, name: str, deadline: Deadline
) -> Run:
    """Run ``command`` to its end: wall time, and the peak RSS of the process (and of any
    process it starts: ccusage's node launcher runs a native binary), from /proc VmHWM polled
    every 20 ms. Not getrusage: Linux carries the forking parent's peak RSS across exec."""
    out_path, err_path = work / f"{name}.out", work / f"{name}.err"
    children_before = _children_cpu_seconds()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        began = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=err, cwd=work, start_new_session=True
        )
        peaks: dict[int, int] = {}  # pid -> VmHWM in kB
        try:
            while process.poll() is None:
                for pid in tree_pids(process.pid):
                    peaks[pid] = max(peaks.get(pid, 0), _vm_hwm_kb(pid))
                if deadline.remaining() <= 0:
                    raise TimeoutError(f"{name} still running when the time budget ran out")
                time.sleep(POLL_SECONDS)
            seconds = time.perf_counter() - began
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, 9)
                process.wait(timeout=30)
    return Run(
        seconds=seconds,
        peak_rss_mb=max(peaks.values(), default=0) * 1024 / 2**20,
        returncode=process.returncode,
        stdout=out_path.read_bytes(),
        stderr=err_path.read_bytes(),
        # The only child reaped meanwhile is this one (the server is still running).
        cpu_seconds=_children_cpu_seconds() - children_before,
    )


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _vm_hwm_kb(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _clean_env(tree: Tree, home: Path) -> dict[str, str]:
    """No configuration of the person running this may leak in: an empty HOME."""
    home.mkdir(exist_ok=True)
    keep = {key: os.environ[key] for key in ("PATH", "LANG", "TZ") if key in os.environ}
    return {**keep, "HOME": str(home), "CLAUDE_CONFIG_DIR": str(tree.root), "NO_COLOR": "1"}


# --- 1. the agent ---------------------------------------------------------------------------


def _agent_command() -> tuple[list[str], dict[str, str]]:
    """The installed console command, else the package from the checkout (same code)."""
    if AGENT.exists():
        return [str(AGENT)], {}
    return [str(PYTHON), "-m", "claude_usage_agent"], {"PYTHONPATH": str(REPO / "agent" / "src")}


def _run_agent(
    env: BenchEnv, tree: Tree, work: Path, deadline: Deadline, *, workers: int | None
) -> tuple[Run, dict[str, Any]]:
    token = prepare(env)
    command, extra = _agent_command()
    print(f"\nagent: {' '.join(Path(part).name for part in command)} sync, fresh state file")
    with servers(env, 1, workers=workers) as (server,):
        print(f"server: backend.serve with {server.workers} daphne worker(s)")
        url = f"http://127.0.0.1:{server.port}"
        server_pids = tree_pids(server.pid)
        services_before = services_cpu(server_pids)
        run = _timed(
            [
                *command,
                "sync",
                "--server",
                url,
                "--token",
                token,
                "--host-name",
                "bench-backfill",
                "--state-file",
                str(work / "agent-state.json"),
                "--json",
                "-q",
            ],
            {**_clean_env(tree, work / "agent-home"), **extra},
            work,
            "agent",
            deadline,
        )
        services_after = services_cpu(server_pids)
        if run.returncode != 0:
            raise RuntimeError(
                f"agent exited {run.returncode}:\n{run.stderr.decode(errors='replace')[-3000:]}"
            )
        _print_cpu(
            run, {name: services_after[name] - services_before[name] for name in services_after}
        )
        client = Client(server.port, token)
        try:
            status, payload = client.get(API + "stats/")
        finally:
            client.close()
    summary = orjson.loads(run.stdout.strip().splitlines()[-1]) if run.stdout.strip() else {}
    print(f"agent summary: {orjson.dumps(summary).decode()}")
    stats: dict[str, Any] = orjson.loads(payload) if status == 200 else {}
    counted = stats.get("total_messages")
    print(
        f"server stats/: total_messages {counted}, total_tokens {stats.get('total_tokens')}, "
        f"total_cost_usd {stats.get('total_cost_usd')}"
    )
    if counted != tree.messages:
        raise RuntimeError(f"stats/ counts {counted} messages, {tree.messages} were written")
    return run, stats


def _print_cpu(run: Run, services: dict[str, float]) -> None:
    """Where the machine's CPU went during the sync: what a faster backfill must cut."""
    spent = {"agent": run.cpu_seconds, **services}
    available = run.seconds * len(os.sched_getaffinity(0))
    shares = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in spent.items())
    print(
        f"CPU during the sync: {shares}; {sum(spent.values()):.2f} s in all, of "
        f"{available:.2f} s the CPUs had"
    )


# --- 2. ccusage ----------------------------------------------------------------------------


def _ccusage() -> Path | None:
    """ccusage's launcher, installed into the cache dir once; None (with a message) if npm is
    missing or the install failed."""
    launcher = CCUSAGE_CACHE / "node_modules" / ".bin" / "ccusage"
    CCUSAGE_CACHE.mkdir(parents=True, exist_ok=True)
    # Keep the cache (node_modules) out of git whatever the repository's .gitignore says.
    (CCUSAGE_CACHE.parent / ".gitignore").write_text("*\n")
    installed = CCUSAGE_CACHE / "node_modules" / "ccusage" / "package.json"
    if installed.exists() and orjson.loads(installed.read_bytes()).get("version") == (
        CCUSAGE_VERSION
    ):
        return launcher
    npm = shutil.which("npm")
    if npm is None:
        print("npm not found: skipping the ccusage comparison")
        return None
    done = subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(CCUSAGE_CACHE),
            "--no-audit",
            "--no-fund",
            f"ccusage@{CCUSAGE_VERSION}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0 or not launcher.exists():
        print(f"npm install ccusage@{CCUSAGE_VERSION} failed, skipping ccusage:\n{done.stderr}")
        return None
    return launcher


def _run_ccusage(
    launcher: Path, tree: Tree, work: Path, deadline: Deadline, stats: dict[str, Any]
) -> Run | None:
    env = _clean_env(tree, work / "ccusage-home")
    # Untimed: load node and the native binary from disk once (the agent's Python is warm too).
    subprocess.run(
        [str(launcher), "--version"], env=env, capture_output=True, timeout=120, check=False
    )
    print(f"\nccusage {CCUSAGE_VERSION}: ccusage claude daily --json --offline")
    run = _timed(
        [str(launcher), "claude", "daily", "--json", "--offline"], env, work, "ccusage", deadline
    )
    if run.returncode != 0:
        print(f"ccusage exited {run.returncode}: {run.stderr.decode(errors='replace')[-2000:]}")
        return None
    with contextlib.suppress(ValueError, AttributeError):
        totals = orjson.loads(run.stdout).get("totals", {})
        print(f"ccusage totals: {orjson.dumps(totals).decode()}")
        same = totals.get("totalTokens") == stats.get("total_tokens")
        print(f"ccusage totalTokens {'equals' if same else 'DIFFERS FROM'} the server's")
    return run


# --- report -----------------------------------------------------------------------------


def _report(tree: Tree, agent: Run, reader: Run | None) -> int:
    megabytes = tree.bytes / MB
    print("\nresults")
    print(
        f"  agent sync:   {agent.seconds:8.2f} s  {megabytes / agent.seconds:7.1f} MB/s  "
        f"{rate(tree.usage_lines, agent.seconds)} usage lines/s  "
        f"{rate(tree.messages, agent.seconds)} messages/s  peak RSS {agent.peak_rss_mb:.1f} MB  "
        f"CPU {agent.cpu_seconds:.2f} s (the agent's own)"
    )
    rss_ok = agent.peak_rss_mb < TARGET_AGENT_RSS_MB
    faster_ok: bool | None = None
    if reader is not None:
        print(
            f"  ccusage read: {reader.seconds:8.2f} s  {megabytes / reader.seconds:7.1f} MB/s  "
            f"{rate(tree.usage_lines, reader.seconds)} usage lines/s  "
            f"peak RSS {reader.peak_rss_mb:.1f} MB  CPU {reader.cpu_seconds:.2f} s"
        )
        ratio = agent.seconds / reader.seconds
        print(f"  agent time / ccusage time: {ratio:.2f}")
        faster_ok = agent.seconds < reader.seconds
    print("\ntargets")
    if faster_ok is None:
        print("  backfill faster than ccusage reads the tree: not measured (no ccusage)")
    else:
        print(f"  backfill faster than ccusage reads the tree: {'met' if faster_ok else 'NOT met'}")
    print(
        f"  agent peak RSS < {TARGET_AGENT_RSS_MB:.0f} MB: "
        f"{'met' if rss_ok else 'NOT met'} ({agent.peak_rss_mb:.1f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
