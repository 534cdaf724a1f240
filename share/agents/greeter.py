#!/usr/bin/env python3
"""greeter — a Dream.OS demo agent that greets whoever writes to it.

* replies to every direct message with a greeting (to the sender, as a
  reply to that message), except to replies, so two agents never loop;
* subscribes to the topic #greetings and logs what is published there;
* logs what it does, and now and then writes a devlog line.

Run by the orchestrator (``dreamos --demo``), or by hand to see the protocol:
``python3 share/agents/greeter.py`` then type ``{"type":"welcome",...}`` lines.
"""

import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "sdk", "python"))

from dreamos_agent import Agent  # noqa: E402

GREETINGS = ("Hello", "Hi", "Greetings", "Good day", "Welcome", "Ahoy",
             "Salut", "Hola", "Ciao", "Hallo")


def text_of(body):
    """Returns a short text for a message body, whatever its shape."""
    if isinstance(body, dict) and "text" in body:
        body = body["text"]
    text = body if isinstance(body, str) else repr(body)
    return text if len(text) <= 80 else text[:77] + "..."


class Greeter(Agent):
    """Greets senders, listens to #greetings."""

    def __init__(self):
        super().__init__(capabilities=["greet"], max_tasks=0, version="1.0")
        self.greeted = 0
        self.heard = 0
        self.rng = random.Random()

    def on_welcome(self, info):
        self.subscribe("#greetings")
        self.log("info", "greeter ready, listening on #greetings",
                 session=info.get("session"))
        self.devlog("Greeter came online and started listening on #greetings.")
        self.call_every(30 + self.rng.uniform(0, 15), self.story)

    def on_message(self, msg):
        sender = msg.get("from")
        to = msg.get("to") or ""
        if to.startswith("#") or to == "*":
            self.heard += 1
            self.log("info", "heard on %s from %s: %s" % (to, sender, text_of(msg.get("body"))),
                     message=msg.get("id"))
            return
        if not sender or sender == self.agent:
            return
        if msg.get("reply_to") is not None:
            # Answering replies could make two polite agents loop forever.
            self.log("debug", "not answering reply %s from %s" % (msg.get("id"), sender))
            return
        self.greeted += 1
        word = self.rng.choice(GREETINGS)
        self.reply(msg, {"text": "%s, %s! (greeting #%d)" % (word, sender, self.greeted),
                         "greeting": self.greeted})
        self.log("info", "greeted %s in reply to message %s" % (sender, msg.get("id")),
                 to=sender, reply_to=msg.get("id"))

    def on_task(self, task):
        who = (task.get("payload") or {}).get("name", "world") \
            if isinstance(task.get("payload"), dict) else "world"
        return {"text": "%s, %s!" % (self.rng.choice(GREETINGS), who)}

    def story(self):
        self.devlog("Greeter has greeted %d agents and heard %d messages on #greetings so far."
                    % (self.greeted, self.heard))


if __name__ == "__main__":
    Greeter().run()
