"""The Kafka wire protocol: a sans-I/O codec and a broker serving the store over it."""

__all__: tuple[str, ...] = ()
