"""The built-in web dashboard (``inferwatch ui``) and its bundled assets."""
