"""`python -m lowering` is the `lowering` command."""

from .cli import main

raise SystemExit(main())
