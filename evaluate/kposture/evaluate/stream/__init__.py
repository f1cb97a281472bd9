"""The evaluate stream runtime: aiokafka in the event loop, exactly once through transactions.

``consuming.Stream`` reads the resources topic in a consumer group and hands each partition's
records to the app; ``transactions.PartitionWriter`` commits one partition's outputs (state
changelog, findings, dead letters, global-table writes) with its input offsets in one Kafka
transaction; ``tables`` keeps the compacted tables every worker reads.
"""
