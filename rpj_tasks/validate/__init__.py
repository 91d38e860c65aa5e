"""Great Expectations gates over a snapshot's release files (issue 15): suites under
``expectations/``, :func:`rpj_tasks.validate.stage.validate_shard` and
:func:`rpj_tasks.validate.stage.validate_snapshot`."""
