"""The grader's trust boundary, in one place: what a submission may send, see and decide.

Everything that crosses from a submission's process into the grader is
validated here before any other code reads it, and every decision about
what a submission's process may see is made here. An auditor reads this
module to know what the grader trusts.

* **Messages** (:func:`validate_message`): every line the student's process
  writes is checked against a schema (types, lengths, counts, nesting) and
  turned into a plain, bounded value, or refused with a one-line reason.
* **Visibility** (see the section below): which paths a submission's process
  can see (an allow-list: the interpreter, the environment, ``course_lib``
  read-only and its scratch directory — nothing else of the repository).
* **Values** (:func:`refuse_as_expected`): nothing that came from the
  submission's process is ever used as an expected value.
"""

from __future__ import annotations

# --- messages ------------------------------------------------------------------------------------

# --- visibility ----------------------------------------------------------------------------------

# --- values --------------------------------------------------------------------------------------
