"""The questionnaire's trigger tasks.

A real application would create model instances here; these tasks keep the
example self-contained by deriving everything from their trigger kwargs.
Whatever ``_run`` returns becomes the kwargs of the task's cascade.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.core.mail import send_mail

from triggers.task import TaskContext, TriggerTask


class ImportSubject(TriggerTask):
    """Creates the respondent's record from the first page."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        page = context.trigger_kwargs["firstPageReceived"]
        email = page["email"].strip().lower()
        subject_id = "subject-" + hashlib.sha256(email.encode()).hexdigest()[:8]
        return {"subjectId": subject_id, "email": email}


class ImportResponses(TriggerTask):
    """Stores one page of answers for the respondent."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        subject = context.trigger_kwargs["t_importSubject"]
        page = context.trigger_kwargs["pageReceived"]
        return {
            "subjectId": subject["subjectId"],
            "page": page["page"],
            "answered": len(page["answers"]),
        }


class ScoreQuestionnaire(TriggerTask):
    """Turns the complete set of answers into a percentage."""

    def _run(self, context: TaskContext) -> dict[str, Any]:
        subject = context.trigger_kwargs["t_importSubject"]
        complete = context.trigger_kwargs["questionnaireComplete"]
        scale = complete["scale"]  # from withParams unless the fire overrides it
        answers = complete["answers"]
        with context.get_logger_context({"subjectId": subject["subjectId"]}) as logger:
            out_of_range = sorted(q for q, value in answers.items() if not 1 <= value <= scale)
            if out_of_range:
                details = {"questions": out_of_range}
                logger.warning("ignoring out-of-range answers", extra={"context": details})
            valid = [value for q, value in answers.items() if q not in out_of_range]
            score = round(100 * sum(valid) / (scale * len(valid)), 1) if valid else 0.0
            logger.info("scored %s answers", len(valid))
        return {"subjectId": subject["subjectId"], "email": subject["email"], "score": score}


class SendReport(TriggerTask):
    """Emails the respondent their score."""

    def _run(self, context: TaskContext) -> None:
        scored = context.trigger_kwargs["t_scoreQuestionnaire"]
        send_mail(
            subject="Your questionnaire results",
            message=f"You scored {scored['score']}%.",
            from_email="surveys@example.com",
            recipient_list=[scored["email"]],
        )
