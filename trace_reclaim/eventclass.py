"""``record``: the class decorator of BPF record classes outside the compiled modules.

Its own module because it must stay interpreted: a compiled function cannot
carry ``dataclass_transform``'s marker.  ``events.record`` is this.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any, Callable, Type, TypeVar

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # Python 3.10: no type checker runs there
    def dataclass_transform() -> Callable[[Any], Any]:
        return lambda f: f

__all__ = ["record"]

_T = TypeVar("_T")


@dataclass_transform()
def record(cls: Type[_T]) -> Type[_T]:
    """``@dataclass(slots=True)`` for an ``Event`` subclass of an interpreted module.

    Compiled (``trace_reclaim.native``), ``Event`` is a native class without a
    ``__slots__`` of its own, so ``dataclass(slots=True)`` would give the
    subclass slots for the header fields too: slots that hide Event's, which
    compiled code reads.  This makes the subclass slotted for the fields it
    adds only (as dataclass does when the base's slots are visible: the
    interpreted build gets the same class either way).
    """
    made: Any = dataclass(cls)
    inherited = {n for b in made.__mro__[1:] for n in getattr(b, "__dataclass_fields__", {})}
    own = tuple(f.name for f in dataclasses.fields(made) if f.name not in inherited)
    body = dict(made.__dict__)
    for name in own + ("__dict__", "__weakref__"):
        body.pop(name, None)
    body["__slots__"] = own
    slotted: Any = type(made)(made.__name__, made.__bases__, body)
    slotted.__qualname__ = made.__qualname__
    return slotted
