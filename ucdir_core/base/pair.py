"""A pair of domains as one value, so code never branches on ``if domain == 'A'``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True)
class DomainPair(Generic[T]):
    """Two values, one for domain A and one for domain B.

    >>> DomainPair(1, 2).map(lambda v: v * 10)
    DomainPair(a=10, b=20)
    """

    a: T
    b: T

    def map(self, fn: Callable[[T], U]) -> "DomainPair[U]":
        """Apply ``fn`` to both members."""
        return DomainPair(fn(self.a), fn(self.b))

    def zip(self, other: "DomainPair[U]") -> "DomainPair[tuple[T, U]]":
        return DomainPair((self.a, other.a), (self.b, other.b))

    def swap(self) -> "DomainPair[T]":
        """The same two values, each in the other's place: ``other[d]`` is the domain other than ``d``'s."""
        return DomainPair(self.b, self.a)

    def __iter__(self) -> Iterator[T]:
        yield self.a
        yield self.b

    def __getitem__(self, index: int) -> T:
        return (self.a, self.b)[index]

    def items(self) -> Iterator[tuple[str, T]]:
        yield "a", self.a
        yield "b", self.b
