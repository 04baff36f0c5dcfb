"""The Streamlit dashboard: a thin view over `core` (no model maths here)."""
