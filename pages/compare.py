"""Compare page: results side by side with the input and the ground truth."""

import streamlit as st

from pages import ui

ui.sidebar_status()

st.title("Compare")
ds = ui.require_dataset("to compare results")

st.write(f"**{ds.name}** is loaded ({ds.kind}, {' × '.join(map(str, ds.data.shape))}).")
st.info("There are no results to compare yet: run a method on the Denoise page first.")
st.page_link("pages/denoise.py", label="Go to the Denoise page", icon=":material/auto_fix_high:")
