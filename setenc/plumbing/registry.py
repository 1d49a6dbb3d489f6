"""One name -> factory map per kind of swappable part (heads, losses, matchers, backbones, text encoders).

A registry is the only list of its kind's names: configs, scripts, evaluation and training ask it (`names()`,
`check(name)`), so adding a head or a matcher is one `register` call. Unknown names and unknown options are
`SetencError`s that list what is known, so every script reports them in one line before any long work starts.
"""

from __future__ import annotations

import inspect
from typing import Callable, Generic, TypeVar

from setenc.plumbing.errors import SetencError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names of one kind of part, in registration order, each with the factory that builds it.

    Args:
        kind: what the parts are called in messages ("head", "matcher", ...).
        fixed: leading factory arguments that are not user options (a head's `in_dim`).
    """

    def __init__(self, kind: str, fixed: tuple[str, ...] = ()):
        self.kind, self.fixed = kind, fixed
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str, factory: Callable[..., T] | None = None):
        """`registry.register("mean", MeanHead)`, or as a class / function decorator."""
        def add(f: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = f
            return f

        return add(factory) if factory is not None else add

    def names(self) -> list[str]:
        return list(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def check(self, name: str) -> str:
        """The name itself, or an error listing the known names."""
        if name not in self._factories:
            raise SetencError(f"unknown {self.kind} {name!r}; known: {', '.join(self._factories)}")
        return name

    def get(self, name: str) -> Callable[..., T]:
        return self._factories[self.check(name)]

    def options(self, name: str) -> list[str]:
        """The keyword options a part takes (its factory's parameters after the fixed ones)."""
        params = inspect.signature(self.get(name)).parameters.values()
        return [p.name for p in params if p.name not in ("self", *self.fixed)
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def check_options(self, name: str, options: dict) -> None:
        """Unknown options are an error, never silently ignored."""
        known = self.options(name)
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise SetencError(f"{self.kind} {name!r} has no option {', '.join(unknown)}; "
                              f"its options are: {', '.join(known) or 'none'}")

    def create(self, name: str, *args, **kw) -> T:
        """Build a part: `args` are the fixed arguments, `kw` its options (checked)."""
        self.check_options(name, kw)
        return self.get(name)(*args, **kw)
