"""Errors that the CLI turns into one line and exit code 2 (bad usage, config or input)."""


class AutoifError(Exception):
    """A problem the user can fix: bad config, missing file, unreachable endpoint, bad input."""


class ConfigError(AutoifError):
    """The configuration is malformed, names an unknown key, or holds a bad value."""


class RunStopped(AutoifError):
    """The run stops cleanly before a stage is done (a budget, batch files written): exit 0,
    finished work kept, `as_dict()` recorded as funnel.json's `stopped`; a rerun goes on."""

    def as_dict(self) -> dict:
        raise NotImplementedError


class MissingDependency(AutoifError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str, feature: str):
    """Import an optional module, or fail with a one-line hint naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"{feature} needs '{module}', which is not installed: pip install 'autoif[{extra}]' ({exc})"
        ) from None
