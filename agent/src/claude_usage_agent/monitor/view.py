"""The monitor's screen as a rich renderable. Pure: a snapshot of the dashboard, the link's
state and the moment in, a renderable out; nothing here reads a clock or the network."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from claude_usage_agent.monitor import formatting as fmt
from claude_usage_agent.monitor.state import LIVE, RECONNECTING, LinkState, Snapshot

BAR_WIDTH = 40


@dataclass(frozen=True)
class ViewOptions:
    server: str
    budget: float | None = None  # USD; without one the cost bar shows no percentage
    message_limit: int | None = None
    zone: tzinfo | None = None  # None: the machine's local time zone


def render(
    snapshot: Snapshot | None, link: LinkState, now: datetime, options: ViewOptions
) -> RenderableType:
    parts: list[RenderableType] = [header(link, now, options)]
    if snapshot is None:
        parts.append(Text("Waiting for the first snapshot from the server…", style="dim"))
        return Panel(Group(*parts), title="Claude Usage Monitor", box=box.ROUNDED)
    dashboard = snapshot.dashboard
    rate_limit = fmt.section(dashboard, "rate_limit")
    parts.append(usage_table(dashboard, snapshot, now, options))
    alert = warning(rate_limit, now, options.zone)
    if alert is not None:
        parts.append(alert)
    parts += [model_table(dashboard), footer(dashboard, snapshot, now, options)]
    return Panel(
        Group(*parts),
        title="Claude Usage Monitor",
        box=box.ROUNDED,
    )


def header(link: LinkState, now: datetime, options: ViewOptions) -> Text:
    text = Text.assemble(("● ", link_colour(link.status)), (link_text(link, now), "bold"))
    text.append(f"   {options.server}", style="dim")
    return text


def link_colour(status: str) -> str:
    return {LIVE: fmt.GREEN, RECONNECTING: fmt.RED}.get(status, fmt.YELLOW)


def link_text(link: LinkState, now: datetime) -> str:
    if link.status == LIVE:
        return "live"
    if link.status == RECONNECTING:
        wait = (
            ""
            if link.retry_at is None
            else f" in {fmt.countdown((link.retry_at - now).total_seconds())}"
        )
        reason = f" ({link.reason})" if link.reason else ""
        return f"reconnecting{wait}, attempt {link.attempt}{reason}"
    return "connecting…"


def bar(fraction: float | None) -> RenderableType:
    if fraction is None:
        return Text("")  # no limit to measure against: no bar
    colour = fmt.usage_colour(fraction)
    return ProgressBar(
        total=100.0,
        completed=min(fraction, 1.0) * 100,
        complete_style=colour,
        finished_style=colour,
    )


def usage_table(
    dashboard: Mapping[str, Any], snapshot: Snapshot, now: datetime, options: ViewOptions
) -> Table:
    summary = fmt.section(dashboard, "summary")
    rate_limit = fmt.section(dashboard, "rate_limit")
    burn = fmt.section(dashboard, "burn_rate")
    # Only the bars give way in a narrow terminal (down from BAR_WIDTH): the labels and the
    # figures stay on one line each.
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(max_width=BAR_WIDTH)
    table.add_column(no_wrap=True)
    table.add_row(*token_row(rate_limit))
    table.add_row("Limit", *limit_row(rate_limit))
    official = official_row(rate_limit, now, options.zone)
    if official is not None:
        table.add_row("Claude says", "", official)
    table.add_row(*cost_row(summary, options.budget))
    table.add_row(*messages_row(summary, options.message_limit))
    table.add_row(*reset_row(rate_limit, snapshot, now, options.zone))
    tokens_per_minute = fmt.number(burn.get("tokens_per_minute"))
    cost_per_minute = fmt.number(burn.get("cost_per_minute_usd"))
    table.add_row("Burn rate", "", Text(fmt.tokens_rate(tokens_per_minute)))
    table.add_row("Cost rate", "", Text(fmt.money_rate(cost_per_minute)))
    return table


def token_row(rate_limit: Mapping[str, Any]) -> tuple[str, RenderableType, Text]:
    """The plan limit counts input and output tokens: the server's `used_percentage` (Claude's
    own when the source is official) against `token_limit`."""
    used = fmt.number(rate_limit.get("limit_tokens_used"))
    limit = fmt.number(rate_limit.get("token_limit"))
    fraction = fmt.number(rate_limit.get("used_percentage")) / 100
    label = Text(f"{fmt.count(used)} / {fmt.count(limit)} ({fmt.percent(fraction)})")
    label.stylize(fmt.usage_colour(fraction))
    return "Tokens", bar(fraction), label


def limit_row(rate_limit: Mapping[str, Any]) -> tuple[Text, Text]:
    """Which plan, and whether the figures are Claude's own (`official`, forwarded by the
    statusline) or the server's `estimate` from the tokens it has seen."""
    source = fmt.limit_source(rate_limit)
    window_total = fmt.short_count(fmt.number(rate_limit.get("current_window_tokens")))
    return (
        Text.assemble(("source: ", "dim"), (source, "bold" if source == "official" else "")),
        Text(f"plan {rate_limit.get('plan')} · window {window_total} tokens (all kinds)"),
    )


def official_row(rate_limit: Mapping[str, Any], now: datetime, zone: tzinfo | None) -> Text | None:
    reading = fmt.official_reading(rate_limit, now, zone)
    return None if reading is None else Text(reading)


def cost_row(summary: Mapping[str, Any], budget: float | None) -> tuple[str, RenderableType, Text]:
    cost = fmt.number(summary.get("total_cost_usd"))
    fraction = fmt.fraction_of(cost, budget)
    if budget is None or fraction is None:
        return "Cost", bar(None), Text(f"{fmt.money(cost)}  (no budget: --budget USD)")
    label = Text(f"{fmt.money(cost)} / {fmt.money(budget)} ({fmt.percent(fraction)})")
    label.stylize(fmt.usage_colour(fraction))
    return "Cost", bar(fraction), label


def messages_row(summary: Mapping[str, Any], limit: int | None) -> tuple[str, RenderableType, Text]:
    messages = fmt.number(summary.get("total_messages"))
    fraction = fmt.fraction_of(messages, limit)
    if limit is None or fraction is None:
        return "Messages", bar(None), Text(fmt.count(messages))
    label = Text(f"{fmt.count(messages)} / {fmt.count(limit)} ({fmt.percent(fraction)})")
    label.stylize(fmt.usage_colour(fraction))
    return "Messages", bar(fraction), label


def reset_row(
    rate_limit: Mapping[str, Any], snapshot: Snapshot, now: datetime, zone: tzinfo | None
) -> tuple[str, RenderableType, Text]:
    reset_at = fmt.parse_time(rate_limit.get("next_reset_at"))
    if not rate_limit.get("is_within_active_window") or reset_at is None:
        return "Reset", Text("no active window", style="dim"), Text("")
    left = fmt.seconds_to_reset(rate_limit, snapshot.received_at, now)
    countdown = Text(fmt.countdown(left), style=f"bold {fmt.reset_colour(left)}")
    at = Text(f"at {fmt.local_time(reset_at, now, zone)} {fmt.zone_name(now, zone)}")
    return "Reset in", countdown, at


def warning(rate_limit: Mapping[str, Any], now: datetime, zone: tzinfo | None) -> Text | None:
    message = fmt.prediction_warning(rate_limit, now, zone)
    return None if message is None else Text(f"⚠ {message}", style="bold red")


def model_table(dashboard: Mapping[str, Any]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, expand=False, title="Models", title_justify="left")
    table.add_column("model")
    table.add_column("share", justify="right")
    table.add_column("tokens", justify="right")
    table.add_column("messages", justify="right")
    table.add_column("cost", justify="right")
    for model in dashboard.get("model_distribution") or ():
        table.add_row(
            str(model.get("model")),
            f"{fmt.number(model.get('percentage')):.1f}%",
            fmt.count(fmt.number(model.get("tokens"))),
            fmt.count(fmt.number(model.get("messages"))),
            fmt.money(fmt.number(model.get("cost_usd"))),
        )
    return table


def footer(
    dashboard: Mapping[str, Any], snapshot: Snapshot, now: datetime, options: ViewOptions
) -> Text:
    summary = fmt.section(dashboard, "summary")
    hours = fmt.number(summary.get("time_range_hours"))
    total = fmt.number(summary.get("total_tokens"))
    return Text(
        f"Last {hours:g} h: {fmt.count(total)} tokens ({fmt.short_count(total)})"
        f" · updated {fmt.clock_time(snapshot.received_at, options.zone)}"
        f" · {fmt.local_time(now, now, options.zone)} {fmt.zone_name(now, options.zone)}"
        " · Ctrl-C quits",
        style="dim",
    )
