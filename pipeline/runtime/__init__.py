"""The one way a stage meets Kafka: compacted-topic follower, retry with backoff.

(Design: ../shared/design.md, "runtime/". The state store, the checkpoint order and
the in-memory runner land here as the stages move off faust, issue 9.)
"""
