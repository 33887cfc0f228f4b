"""Layout fixes for the page (issue 17): headers whole, chips whole, no empty boxes, no overlap."""

LAYOUT_CSS = """
/* a header breaks between words, never inside one ("fi le", "stat us", "suppo rt") */
th, th *, .table-wrap th span { word-break: keep-all !important; overflow-wrap: normal !important;
  hyphens: none !important; }
/* example chips show their whole prompt, wrapped, not cut at 200 px */
#examples .gallery-item, #examples .gallery-item * { max-width: none !important; }
#examples .gallery-item div { white-space: normal !important; overflow: visible !important;
  text-overflow: clip !important; }
/* no empty box under "Saved chats" before the first chat is saved */
#saved-chats:not(:has(input)) { display: none !important; }
/* the comparison table fits: the reply wraps, the numbers stay narrow */
#compare-table table { table-layout: fixed; width: 100% !important; }
#compare-table td, #compare-table th { white-space: normal !important; }
@media (max-width: 640px) {
  .tok-row { grid-template-columns: 6.5em 1fr 1fr; }
  .tok-off { height: auto; min-height: 16px; line-height: 1.15; white-space: normal; }
}
"""
