"""The error raised for a manifest that fails its checks, or for a data set file it cannot be built from."""

from __future__ import annotations

from pathlib import Path

from ichct.errors import IchctError


class ManifestError(IchctError):
    """A manifest failed its checks; ``problems`` holds one line per problem.

    Parameters
    ----------
    manifest
        The manifest, or the data set file (``subject`` then says what it is) that failed.
    problems
        One line per problem.
    subject
        What ``manifest`` is, for the message: ``"manifest"`` or e.g. ``"label CSV"``.
    """

    def __init__(self, manifest: str | Path, problems: list[str], *, subject: str = "manifest") -> None:
        self.manifest = str(manifest)
        self.problems = list(problems)
        self.subject = subject
        shown = self.problems[:20]
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        super().__init__(f"{subject} {self.manifest} failed {len(self.problems)} check(s):\n  " + "\n  ".join(shown) + more)

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle with the constructor's arguments (the error may cross processes, e.g. a training run)."""
        return _rebuild, (type(self), self.manifest, self.problems, self.subject)


def _rebuild(cls: type[ManifestError], manifest: str, problems: list[str], subject: str) -> ManifestError:
    return cls(manifest, problems, subject=subject)
