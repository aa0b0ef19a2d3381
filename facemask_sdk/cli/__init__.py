"""The `facemask-sdk` command line: thin click commands over library functions."""
