"""A firing process of the demo, standing in for one web server.

Reads batches of fires from stdin, one JSON list per line
(``[{"uid": ..., "trigger": ..., "kwargs": {...}}, ...]``), fires them in
order, records each in the timeline and answers ``done`` on stdout. Stops at
end of input. Run by ``examples.questionnaire.demo``; not meant to be run alone.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.questionnaire.settings")
    import django

    django.setup()
    from triggers.shortcuts import get_trigger_manager

    from . import records

    actor = sys.argv[1] if len(sys.argv) > 1 else f"client-{os.getpid()}"
    print("ready", flush=True)
    for line in sys.stdin:
        for fire in json.loads(line):
            manager = get_trigger_manager(fire["uid"])
            started = time.time()
            scheduled = manager.fire(fire["trigger"], fire["kwargs"])
            records.add(
                "fire",
                fire["uid"],
                actor,
                t=started,
                trigger=fire["trigger"],
                kwargs=fire["kwargs"],
                scheduled=[instance.name for instance in scheduled],
            )
        print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
