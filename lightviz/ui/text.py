"""What users typed or uploaded, shown as plain text: never Markdown, never a link.

Streamlit renders Markdown, and its own directives, in st.markdown, st.caption, alerts
(st.error, st.warning, st.info, st.success), headers, st.spinner and st.progress texts,
widget and metric labels and radio options. A model name from a link, a file name, a layer
or class name read from a file, or an error message quoting any of them, goes through `plain`
before it reaches one of those. Selectbox options and dataframe cells are plain text already.

`plain` does two things:
- backslash-escapes the ASCII punctuation Markdown, Streamlit's directives (`:red[...]`,
  `:material/icon:`, emoji shortcodes) and its math (`$...$`) are built from;
- puts an invisible word joiner (U+2060) where GitHub-flavored Markdown would turn bare text
  into a link or Streamlit an icon (after a ':' that is not followed by a space, as in
  'https://' or ':material/home:'; before the '@' of an e-mail address; between 'www' and
  '.'): those are found after escapes are resolved, so escaping alone does not stop them.
  Prose ('file.npz: 100 inputs') gets none.

Whitespace runs (newlines included) become one space, so a string cannot start a new block.
Plotly figures have their own HTML subset; lightviz.plots.style.plain escapes for those.
"""

from __future__ import annotations

import re

__all__ = ["plain"]

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:@&=^])")
_AUTOLINK = re.compile(r"(?<=:)(?=\S)|(?<=\w)(?=@)|(?<=www)(?=\.)", re.IGNORECASE)
WORD_JOINER = "\u2060"


def plain(text: object) -> str:
    """`text` as Streamlit shows it literally, on one line.

    >>> plain("[Session expired](https://evil.example)")
    '\\\\[Session expired\\\\]\\\\(https\\\\:\\u2060//evil\\\\.example\\\\)'
    """
    return _MARKDOWN.sub(r"\\\1", _AUTOLINK.sub(WORD_JOINER, " ".join(str(text).split())))
