"""Ground floor shared by generation and evaluation: repository mirrors, worktrees, environments, patches.

`repos` (Workspace: mirrors, worktrees, the environment of a row), `patches` (the official apply fallbacks and
escape checks), `environments` (one per (repo, version), built by `recipes`), `standins` (services tests call,
inside the evaluation's namespace). Generation needs worktrees and environments as much as evaluation does, so
this room sits below both stages.
"""
