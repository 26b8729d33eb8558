"""One racing process of the document-tier cross-process test: fires its own
triggers into a session kept by docs/examples/sqlite_storage.py, running
the tasks that become ready in threads of this process.

Usage: python -m tests.contract_racer DB_PATH UID RACER FIRES START_AT
Prints one JSON line: how many fires had to be repeated after a conflict.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time


def main() -> None:
    path, uid, racer, fires, start_at = sys.argv[1:6]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from tests.contract_backends import sqlite_example
    from triggers import runners
    from triggers.exceptions import WriteConflictError
    from triggers.manager import TriggerManager
    from triggers.runners.threading import ThreadingTaskRunner

    runners.DEFAULT_TASK_RUNNER = "threading"
    manager = TriggerManager(sqlite_example().SQLiteDocumentStorage(uid, path=path))
    repeated = 0
    time.sleep(max(0.0, float(start_at) - time.time()))  # every racer starts together
    for i in range(int(fires)):
        while True:
            try:
                manager.fire(f"p{racer}_{i}")
                break
            except WriteConflictError:
                repeated += 1  # nothing was written: fire again
        time.sleep(random.uniform(0, 0.005))
    ThreadingTaskRunner.join_all(60)
    print(json.dumps({"repeated": repeated}))


if __name__ == "__main__":
    main()
