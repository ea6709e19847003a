"""Commands that use a search's results: evaluate, predict, report, ui, studies.

Registered on the `sceneclf` group by sceneclf.cli (imported at its end)."""
