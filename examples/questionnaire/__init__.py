"""The questionnaire workflow, runnable end to end: ``make demo``.

A respondent's pages arrive in any order, from any process:

- ``t_importSubject`` imports the respondent once the first page and the
  completion have both arrived;
- ``t_importResponses`` imports every page (``andEvery pageReceived``), each
  one once the subject exists (it waits on ``t_importSubject``'s cascade);
- ``t_importBrowserMetadata`` imports the browser's details once, after the
  first page, unless the questionnaire runs embedded in another app
  (``embeddedApp``, announced when the session starts).

Modules: ``settings`` (Django), ``celery_app`` (the worker's app), ``tasks``
(the three TriggerTasks), ``records`` (where the tasks record what they
imported, and the demo its timeline), ``client`` (a firing process),
``demo`` (the orchestrator) and ``workflow.json``.
"""
