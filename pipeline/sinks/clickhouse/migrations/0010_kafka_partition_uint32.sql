-- A Kafka partition number is an int32 (0 .. 2^31 - 1); 0001 stored it as UInt16, so a
-- record from partition 65,536 or above could not be stored with its coordinates (the
-- insert is refused and the row dead-lettered). Widening is a metadata change plus a
-- rewrite of one small column; existing values are kept. Re-runnable.
ALTER TABLE {db}.events MODIFY COLUMN kafka_partition UInt32;
