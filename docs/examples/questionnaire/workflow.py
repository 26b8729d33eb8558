"""The questionnaire workflow: which task runs after which triggers."""

from __future__ import annotations

from typing import Any

WORKFLOW: dict[str, Any] = {
    # Create the respondent's record as soon as the first page arrives.
    "t_importSubject": {
        "after": ["firstPageReceived"],
        "run": "questionnaire.tasks.ImportSubject",
    },
    # Store every page, but only once the respondent's record exists.
    # andEvery makes one instance per pageReceived.
    "t_importResponses": {
        "after": ["t_importSubject"],
        "andEvery": "pageReceived",
        "run": "questionnaire.tasks.ImportResponses",
    },
    # Score the answers once the questionnaire is complete, unless the
    # respondent withdrew first. withParams supplies a static setting.
    "t_scoreQuestionnaire": {
        "after": ["questionnaireComplete", "t_importSubject"],
        "unless": ["questionnaireWithdrawn"],
        "run": "questionnaire.tasks.ScoreQuestionnaire",
        "withParams": {"questionnaireComplete": {"scale": 5}},
    },
    # Tell the respondent, once the score is known.
    "t_sendReport": {
        "after": ["t_scoreQuestionnaire"],
        "run": "questionnaire.tasks.SendReport",
    },
}
