"""The one error of the workspace room."""

from __future__ import annotations


class WorkspaceError(RuntimeError):
    """A repository, worktree or environment that could not be prepared."""
