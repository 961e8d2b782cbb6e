"""trainmap's Streamlit dashboard. Reads only through ``store``; never imports torch."""
