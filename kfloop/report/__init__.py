"""The periodic report of one model (``kfloop report``): collected from the workspace (:mod:`.collect`), rendered as
one self-contained HTML page with inline SVG plots (:mod:`.render`, :mod:`.svg`), printed to PDF on request by
headless Chromium (:mod:`.pdf`), stored and sent to the alert webhooks with delivery metrics (:mod:`.publish`,
:mod:`.deliver`)."""
