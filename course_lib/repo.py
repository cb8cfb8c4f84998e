"""Where the course's files are: the checkout a command works on, found explicitly.

The commands that read or write the course's folders (``run``, ``release``,
``grade``'s default source, ``report``) work on a *checkout* of the course: a
folder with ``notebooks/``, ``solutions/`` and ``course_lib/``. It is the
current directory (or one above it, as ``git`` finds its repository) or the
``--repo`` folder, never guessed from where the package was installed, which
for a ``pip install .`` is ``site-packages``.
"""

from __future__ import annotations

from pathlib import Path

#: What makes a folder a checkout of the course.
MARKERS = ("notebooks", "solutions", "course_lib")


class NotACourseCheckout(ValueError):
    """The folder given (or the current one) is not inside a checkout of the course."""


def is_checkout(path: str | Path) -> bool:
    """Whether ``path`` is the top folder of a checkout of the course."""
    return all((Path(path) / marker).is_dir() for marker in MARKERS)


def find_repo(start: str | Path | None = None) -> Path:
    """The checkout that holds ``start`` (default: the current directory), searching upwards.

    Raises:
        NotACourseCheckout: with a message that says what was looked for and how to point at it.
    """
    origin = Path.cwd() if start is None else Path(start)
    origin = origin.expanduser().resolve()
    if start is not None and not origin.is_dir():
        raise NotACourseCheckout(f"--repo {start}: no such folder")
    for folder in (origin, *origin.parents):
        if is_checkout(folder):
            return folder
    where = "the current directory" if start is None else str(origin)
    raise NotACourseCheckout(
        f"{where} is not inside a checkout of the course (a folder with {', '.join(m + '/' for m in MARKERS)}); "
        "run the command from your clone, or pass --repo DIR"
    )


def library_root() -> Path:
    """The folder the imported ``course_lib`` package sits in.

    For the course's editable install that is the checkout itself, whose
    ``solutions/`` and ``tests/`` the grader must hide from a submission; for
    an installed package it is ``site-packages`` (nothing there to hide).
    """
    return Path(__file__).resolve().parent.parent
