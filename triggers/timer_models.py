"""The due index of the database backend (see
:mod:`triggers.storages.due_index`): one row per pending timer of any
session, by when it is due. A session's own timers are in its rows; this
table only points at them, so a sweeper reads the due rows and nothing
else."""

from __future__ import annotations

from django.db import models


class DueTimer(models.Model):
    id = models.BigAutoField(primary_key=True)
    uid = models.CharField(max_length=250)
    timer_id = models.CharField(max_length=250)
    #: When the timer is due (or, while a sweeper holds it, when its claim lapses).
    due = models.DateTimeField(db_index=True)
    #: Storage registry key and options, manager key: what rebuilds the manager.
    locator = models.JSONField(default=dict)

    class Meta:
        app_label = "triggers"
        db_table = "triggers_due_timer"
        constraints = [
            models.UniqueConstraint(fields=["uid", "timer_id"], name="triggers_due_timer_unique")
        ]

    def __str__(self) -> str:
        return f"{self.uid} {self.timer_id} @ {self.due.isoformat()}"
