"""Plotly figures of a study (figures) and the offline HTML report (study). Functions return
figures and pages; only the CLI writes them."""
