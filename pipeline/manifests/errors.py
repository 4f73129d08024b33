"""The error raised for a manifest that fails its checks."""

from __future__ import annotations

from pathlib import Path


class ManifestError(ValueError):
    """A manifest failed its checks; ``problems`` holds one line per problem."""

    def __init__(self, manifest: str | Path, problems: list[str]) -> None:
        self.manifest = str(manifest)
        self.problems = list(problems)
        shown = self.problems[:20]
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        super().__init__(f"manifest {self.manifest} failed {len(self.problems)} check(s):\n  " + "\n  ".join(shown) + more)
