"""Compaction of closed hours: a closed hour's many small files of one log type become few large ones.

`zeek-pipeline compact` runs it (commands/compact.py). The modules, in the order a run uses them:
`lake.py` finds the hours and says which are closed; `protect.py` keeps out the files a writer's commit log
may still publish; `plan.py` bin-packs an hour's files to the target size; `merge.py` writes one output,
sorted by event_time, in bounded memory; `journal.py` is the per-hour journal (lock and commit point);
`run.py` takes the steps, and recovers a crashed run first. docs/writer-durability.md ("Compaction") says
why kill -9 at any step loses nothing and leaves no duplicate.
"""
