"""Graded exercises: one source notebook → student notebooks, and a grader that isolates student code.

* :func:`check` - what test cells are written with (see :mod:`.checks`);
* :mod:`.trusted` - facts about a learner's model, file or program, measured by the grader
  from a snapshot, never in the learner's process;
* :mod:`.release` - ``solutions/`` → ``exercises/`` with nbgrader's own preprocessors;
* :mod:`.grader` - grade one submission or a cohort (sandboxed, parallel, CSV + feedback).

Importing this package is cheap: the grader's modules load only when used.
"""

from course_lib.grading.checks import check, compare

__all__ = ["check", "compare"]
