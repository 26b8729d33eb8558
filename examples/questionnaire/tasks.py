"""The questionnaire's trigger tasks. Each records what it "imported"
(``records.add``) and returns the kwargs of its cascade."""

from __future__ import annotations

import hashlib
from typing import Any

from triggers.task import TaskContext, TriggerTask

from . import records


def _record(context: TaskContext, what: str, **data: Any) -> None:
    uid = context.manager.storage.uid
    records.add("import", uid, "worker", instance=context.instance_name, what=what, **data)


class ImportSubject(TriggerTask):
    """Creates the respondent from the first page, once the questionnaire is complete."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        first = context.trigger_kwargs["firstPageReceived"]
        email = first["email"].strip().lower()
        subject_id = "subject-" + hashlib.sha256(email.encode()).hexdigest()[:6]
        _record(context, "subject", subjectId=subject_id, name=first["name"])
        return {"subjectId": subject_id}


class ImportResponses(TriggerTask):
    """Stores the answers of one page for the imported respondent."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        subject_id = context.trigger_kwargs["t_importSubject"]["subjectId"]
        page = context.trigger_kwargs["pageReceived"]
        _record(
            context, "responses", subjectId=subject_id, page=page["page"],
            answers=len(page["answers"]),
        )  # fmt: skip
        return {"subjectId": subject_id, "page": page["page"]}


class ImportBrowserMetadata(TriggerTask):
    """Stores the respondent's browser details (not available when embedded)."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        agent = context.trigger_kwargs["firstPageReceived"]["userAgent"]
        _record(context, "browser metadata", userAgent=agent)
        return {}


class RemindRespondent(TriggerTask):
    """Reminds a respondent whose questionnaire was not completed in time:
    run when the subject import's ``deadline`` fires ``completionOverdue``."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        overdue = context.trigger_kwargs["completionOverdue"]["instance"]
        first = context.manager.storage.latest_kwargs.get("firstPageReceived") or {}
        _record(context, "reminder", name=first.get("name", "?"), overdue=overdue)
        return {}
