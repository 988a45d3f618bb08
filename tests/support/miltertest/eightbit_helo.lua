-- A HELO name that is not UTF-8 (Sendmail passes one; so does Postfix with
-- smtputf8_enable = no). pymilter cannot decode it, so our helo callback is
-- never called; libmilter must not answer 451 "Filter failure" for that.
-- EXPECT is the end-of-message answer: "a" (accept) or "y" (our 451 reply).
dofile(DIR .. "/common.lua")

run("eightbit_helo", function()
  local conn = mt.connect(SOCKET, 40, 0.25)
  ok(mt.macro(conn, SMFIC_CONNECT, "j", "mx.example.org", "{client_addr}", CLIENT),
     "connect macros")
  ok(mt.conninfo(conn, "client.example.net", CLIENT), "conninfo")
  expect_reply(conn, SMFIR_CONTINUE, "connect")
  ok(mt.helo(conn, "mail\255\254.example.net"), "helo")
  expect_reply(conn, SMFIR_CONTINUE, "helo")
  sendmail_envelope(conn, {{"X-MX6-Verdict", "whitelisted; forged"}})
  ok(mt.eoh(conn), "eoh")
  expect_reply(conn, SMFIR_CONTINUE, "eoh")
  ok(mt.bodystring(conn, "Hello.\r\n"), "body")
  ok(mt.eom(conn), "eom")
  if EXPECT == "a" then
    expect_reply(conn, SMFIR_ACCEPT, "eom")
    if not mt.eom_check(conn, MT_HDRDELETE, "X-MX6-Verdict", 1) then
      fail("eom: the forged X-MX6-Verdict was not deleted")
    end
  else
    expect_reply(conn, SMFIR_REPLYCODE, "eom")
  end
  ok(mt.disconnect(conn), "disconnect")
end)
