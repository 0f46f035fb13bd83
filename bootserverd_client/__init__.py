"""bootserverd-client: what the machines that boot from bootserverd run (the laptop image
updater). Standard library only; imports nothing of the server."""
