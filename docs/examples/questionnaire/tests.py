"""Workflow tests for the questionnaire, as an application would write them."""

from __future__ import annotations

from uuid import uuid4

from django.core import mail
from django.test import SimpleTestCase

from triggers.shortcuts import start_session
from triggers.testing import DevNullTask, FailingTask, TriggerManagerTestCaseMixin


class QuestionnaireWorkflowTest(TriggerManagerTestCaseMixin, SimpleTestCase):
    def setUp(self) -> None:
        super().setUp()
        # A fresh session per test; the tasks run in threads of this process.
        self.manager = start_session(f"test-questionnaire:{uuid4().hex}", "questionnaire")

    def submit_first_page(self) -> None:
        self.manager.fire("firstPageReceived", {"name": "Ada", "email": "ada@example.com"})

    def test_completed_questionnaire_is_scored_and_reported(self) -> None:
        # Given a respondent who answered the first page
        self.submit_first_page()

        # When they complete the questionnaire
        self.manager.fire("questionnaireComplete", {"answers": {"q1": 5, "q2": 3}})

        # Then the answers are scored and the report mailed
        scored = self.assertInstanceFinished("t_scoreQuestionnaire#0")
        self.assertEqual(scored.metadata["result"]["score"], 80.0)
        self.assertInstanceFinished("t_sendReport#0")
        self.assertEqual(len(mail.outbox), 1)
        self.assertUnresolvedTasks(["t_importResponses"])  # no page imported yet

    def test_each_page_is_imported_once_the_subject_exists(self) -> None:
        # Given two pages that arrive before the first page
        self.manager.fire("pageReceived", {"page": 2, "answers": {}})
        self.manager.fire("pageReceived", {"page": 3, "answers": {}})
        self.assertInstanceUnstarted("t_importResponses#0")

        # When the first page arrives
        self.submit_first_page()

        # Then both waiting pages are imported
        self.assertInstanceFinished("t_importResponses#0")
        self.assertInstanceFinished("t_importResponses#1")
        self.assertInstanceMissing("t_importResponses#2")

    def test_withdrawal_abandons_scoring(self) -> None:
        # Given a respondent who withdrew
        self.submit_first_page()
        self.manager.fire("questionnaireWithdrawn")

        # When the questionnaire is completed anyway
        self.manager.fire("questionnaireComplete", {"answers": {"q1": 1}})

        # Then nothing is scored or sent
        self.assertInstanceAbandoned("t_scoreQuestionnaire#0")
        self.assertInstanceMissing("t_sendReport#0")
        # ... and only the page import is left, waiting for pages
        self.assertUnresolvedInstances(["t_importResponses#0"])

    def test_a_failed_import_holds_back_the_rest(self) -> None:
        # Given an import task that fails (replaced by a ready-made test task)
        self.manager.update_configuration(
            {"t_importSubject": {"after": ["firstPageReceived"], "run": FailingTask.name}}
        )
        # ... and a report task that must not send mail in this test
        self.manager.update_configuration(
            {"t_sendReport": {"after": ["t_scoreQuestionnaire"], "run": DevNullTask.name}}
        )

        # When the respondent goes through the questionnaire
        self.submit_first_page()
        self.manager.fire("questionnaireComplete", {"answers": {"q1": 4}})

        # Then the failure is recorded and scoring waits for the import
        self.assertInstanceFailed("t_importSubject#0", RuntimeError)
        self.assertInstanceUnstarted("t_scoreQuestionnaire#0")
