"""Content-side support for imported blog posts: the remote-post behavior and its catalog key."""
