"""The studio UI: a Streamlit multipage app (``app.py`` holds the navigation, ``app_pages/`` one file per page)."""
