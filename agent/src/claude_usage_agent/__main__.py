"""`python -m claude_usage_agent`, also how the statusline starts its background worker."""

from claude_usage_agent.cli import main

raise SystemExit(main())
