"""Shared helpers of the Streamlit pages: workspace safety, cached loading, theme, token highlighting."""
