"""Reading posts from the platforms (the only code that talks to the Internet)."""
