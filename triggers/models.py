"""Tables of the database storage backend
(:class:`triggers.storages.database.DatabaseStorageBackend`).

They mirror the Redis layout of the cache backend, one row per hash field, so
a fire reads and writes only the rows of the trigger it fired:

==========================  =================================================
table                       one row per
==========================  =================================================
``triggers_session``        session: ``version`` (bumped by every write),
                            ``meta`` (JSON), ``counters`` (task -> next
                            instance number, JSON), ``updated_at``; its row
                            lock is the session lock
``triggers_task``           task: its directives (JSON)
``triggers_trigger_index``  trigger: the tasks that mention it (JSON list)
``triggers_instance``       instance: its record (JSON) and the lease of the
                            worker running it (token, expiry)
``triggers_waiting``        (task, trigger, instance) for every unstarted
                            instance still missing that trigger
``triggers_latest_kwargs``  trigger that fired: the kwargs it last fired with
``triggers_received``       (instance, trigger) an instance received: the
                            kwargs (``field`` is the trigger name, ``\x1f`` +
                            name for ``unless``), so a fire writes one row
                            whatever the width of ``after``
``triggers_timer``          pending timer of the session (delayed fire,
                            deadline): its JSON
``triggers_idempotency``    idempotency key recorded by a fire, until it
                            expires (Unix time)
==========================  =================================================

Sessions are created by the backend only; these models are not meant to be
edited by hand (use the manager's API), but they are plain Django models, so
the admin or a shell can read them.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Session(models.Model):
    id = models.BigAutoField(primary_key=True)
    uid = models.CharField(max_length=250, unique=True)
    version = models.BigIntegerField(default=0)
    meta = models.JSONField(null=True)
    counters = models.JSONField(default=dict)
    updated_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        db_table = "triggers_session"

    def __str__(self) -> str:
        return self.uid


class SessionTask(models.Model):
    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="task_rows")
    name = models.CharField(max_length=200)
    config = models.JSONField()

    class Meta:
        db_table = "triggers_task"
        constraints = [
            models.UniqueConstraint(fields=["session", "name"], name="triggers_task_unique")
        ]


class TriggerIndex(models.Model):
    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="index_rows")
    trigger = models.CharField(max_length=200)
    tasks = models.JSONField()

    class Meta:
        db_table = "triggers_trigger_index"
        constraints = [
            models.UniqueConstraint(
                fields=["session", "trigger"], name="triggers_trigger_index_unique"
            )
        ]


class SessionInstance(models.Model):
    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="instance_rows")
    name = models.CharField(max_length=221)
    task = models.CharField(max_length=200)
    record = models.JSONField()
    lease_token = models.CharField(max_length=100, null=True)
    lease_expires = models.DateTimeField(null=True)

    class Meta:
        db_table = "triggers_instance"
        constraints = [
            models.UniqueConstraint(fields=["session", "name"], name="triggers_instance_unique")
        ]


class WaitingEntry(models.Model):
    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="waiting_rows")
    trigger = models.CharField(max_length=200)
    task = models.CharField(max_length=200)
    instance = models.CharField(max_length=221)

    class Meta:
        db_table = "triggers_waiting"
        constraints = [
            models.UniqueConstraint(
                fields=["session", "trigger", "task", "instance"], name="triggers_waiting_unique"
            )
        ]


class LatestKwargs(models.Model):
    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="kwargs_rows")
    trigger = models.CharField(max_length=200)
    kwargs = models.JSONField(null=True)

    class Meta:
        db_table = "triggers_latest_kwargs"
        verbose_name_plural = "latest kwargs"
        constraints = [
            models.UniqueConstraint(
                fields=["session", "trigger"], name="triggers_latest_kwargs_unique"
            )
        ]


class ReceivedKwargs(models.Model):
    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="received_rows")
    instance = models.CharField(max_length=221)
    field = models.CharField(max_length=201)
    kwargs = models.JSONField(null=True)

    class Meta:
        db_table = "triggers_received"
        verbose_name_plural = "received kwargs"
        constraints = [
            models.UniqueConstraint(
                fields=["session", "instance", "field"], name="triggers_received_unique"
            )
        ]


class SessionTimer(models.Model):
    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="timer_rows")
    timer_id = models.CharField(max_length=250)
    timer = models.JSONField()

    class Meta:
        db_table = "triggers_timer"
        constraints = [
            models.UniqueConstraint(fields=["session", "timer_id"], name="triggers_timer_unique")
        ]


class IdempotencyKey(models.Model):
    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="idempotency_rows")
    key = models.CharField(max_length=250)
    expires = models.FloatField()

    class Meta:
        db_table = "triggers_idempotency"
        constraints = [
            models.UniqueConstraint(fields=["session", "key"], name="triggers_idempotency_unique")
        ]


from .timer_models import DueTimer  # noqa: E402,F401  (the timers' due index, in its own module)
