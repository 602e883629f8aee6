"""Consumer groups: the group coordinator state machine, assignors and committed offsets."""

__all__: tuple[str, ...] = ()
