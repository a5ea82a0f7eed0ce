"""The one way a stage meets Kafka.

A stage is a plain class with four verbs (``stage.py``); the runtime makes its steps
durable in one checkpoint order (``checkpoint.py``) on changelog state (``state.py``),
from an aiokafka consumer group (``consumer.py``) or, in tests, in memory
(``memory.py``). Beside them: the compacted-topic follower, retry with backoff, the
worker process and thin aiokafka helpers.
"""
