"""The evaluate stream runtime: aiokafka in the event loop, exactly once through transactions.

``consuming.Stream`` reads the resources topic in a consumer group and hands each partition's
records to the app; ``transactions.PartitionWriter`` commits one partition's outputs (state
changelog, findings, dead letters, global-table writes) with its input offsets in one Kafka
transaction; ``tables`` keeps the compacted tables every worker reads.

What the app does with a record: ``processing`` turns it into the object's new state (encoded by
``storing``) and the records to publish, which ``publishing`` batches to the producer;
``inventory`` indexes the cluster-wide views cross-object checks read, over ``watched_dict``
tables; ``policy_following`` reads the baselines topic and ``periodic`` runs the timed work.
"""
