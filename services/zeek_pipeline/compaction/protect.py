"""The files a writer may still publish again: those listed in the latest commit record of a partition.

A writer's recovery rolls the latest record of a partition forward: it publishes each file the record
lists (on S3 a crash between the copy to the final key and the delete of the staged object leaves both).
If compaction merged and deleted such a file, that roll-forward would publish it again next to the merged
rows (a duplicate), or fail for good when the staged copy is gone too. So a run leaves every file listed
in a latest record out of its inputs; once the partition commits its next flush (or is taken over) the
record is no longer the latest, no one publishes its files again, and the next run merges them.

The order matters: the hour is listed first, the records are read after. A file in the listing was
published, so its record existed before the listing; if that record is still the latest when read, the
file is protected, and if it is not, no roll-forward will ever read it again.
"""

from __future__ import annotations

from zeek_pipeline.writer.commitlog import COMMITS_DIR, CommitLog
from zeek_pipeline.writer.storage import Storage


def pending_finals(storage: Storage) -> set[str]:
    """Final paths listed by the latest commit record of every partition of every topic in the base."""
    folders = {entry.rel.rpartition("/")[0] for entry in storage.walk(COMMITS_DIR)}
    finals: set[str] = set()
    for folder in sorted(folders):
        topic, _, partition = folder.removeprefix(f"{COMMITS_DIR}/").rpartition("/p")
        if not topic or not partition.isdigit():
            continue  # not a partition's log (`<topic>/p<n>`)
        record = CommitLog(storage, topic).latest(int(partition))
        if record is not None:
            finals.update(f.final for f in record.files)
    return finals
