"""Cove playground: a Gradio chat app that talks to deployed models through the gateway."""
