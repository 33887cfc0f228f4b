"""Downloads made in the visitor's own browser.

The server never writes an export to disk: a handler returns the text, and a
line of JavaScript hands it to the browser as a file. Nothing is kept, and
nothing can be fetched by another session through a file URL.
"""

from __future__ import annotations

import gradio as gr

SAVE_JS = """(text, name) => {
  if (!text) { return [text, name]; }
  const kind = name.endsWith('.jsonl') ? 'application/jsonl' : 'application/json';
  const blob = new Blob([text], {type: kind});
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  return [text, name];
}"""


class Download:
    """A hidden holder for one download's text and file name."""

    def __init__(self):
        self.text = gr.Textbox(visible=False)
        self.name = gr.Textbox(visible=False)

    def wire(self, trigger, fn, inputs, **kwargs) -> None:
        """``fn(*inputs) -> (text, file name)``; the browser then saves the text as that file."""
        trigger(fn, inputs, [self.text, self.name], **kwargs).success(
            None, [self.text, self.name], [self.text, self.name], js=SAVE_JS
        )
