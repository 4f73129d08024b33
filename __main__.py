"""Allow ``python -m ichct``."""

from ichct.pipeline.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
