"""The real-time transport: the Centrifugo client protocol over WebSockets."""
