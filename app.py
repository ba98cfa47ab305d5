"""EM denoising workbench — entry script: page config, session state, navigation only."""

import streamlit as st

from pages import ui

st.set_page_config(page_title="EM denoising workbench", page_icon="🔬", layout="wide")
ui.init_state()

pages = [
    st.Page("pages/data.py", title="Data", icon=":material/folder_open:", default=True),
    st.Page("pages/denoise.py", title="Denoise", icon=":material/auto_fix_high:"),
    st.Page("pages/batch.py", title="Batch", icon=":material/dynamic_feed:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/learn.py", title="Learn", icon=":material/school:"),
]
st.navigation(pages).run()
