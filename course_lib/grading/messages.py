"""The learner-facing words of the grader's feedback, in every language the course is taught in: one table.

Only the grader's own words are translated (headings, "hidden test", "hint"); what a check says (its name,
message and hint) is written in the source notebook and shown as written. Terms follow i18n/ko/GLOSSARY.md.
"""

from __future__ import annotations

#: Languages ``course-lib grade --lang`` accepts.
FEEDBACK_LANGUAGES = ("en", "ko")

FEEDBACK: dict[str, dict[str, str]] = {
    "en": {
        "title": "# Feedback: {student} · {assignment}",
        "score": "**Score: {score:g} / {max_score:g}**",
        "hidden_test": "hidden test {number}",
        "hint": "hint",
        "cell_errors": "## Cells of yours that raised an error",
        "code_cell": "code cell {index}: {error}",
        "more_errors": "… and {count} more",
        "malformed": "{count} error report(s) from your notebook's process were malformed and left out",
    },
    "ko": {
        "title": "# 피드백: {student} · {assignment}",
        "score": "**점수: {score:g} / {max_score:g}**",
        "hidden_test": "숨은 검사 {number}",
        "hint": "힌트",
        "cell_errors": "## 오류가 난 여러분의 셀",
        "code_cell": "코드 셀 {index}: {error}",
        "more_errors": "… 그 밖에 {count}개",
        "malformed": "노트북 프로세스가 보낸 오류 보고 {count}개는 형식이 잘못되어 제외했습니다",
    },
}


def feedback_text(lang: str, key: str, **values: object) -> str:
    """One feedback string in ``lang`` with its values filled in (an unknown language is an error, not English)."""
    if lang not in FEEDBACK:
        raise ValueError(f"feedback language {lang!r} is not available; choose one of {', '.join(FEEDBACK_LANGUAGES)}")
    return FEEDBACK[lang][key].format(**values)
