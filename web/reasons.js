// Human sentences for the booking platform's answers: refusal reasons (errorData.reasons) and results.

function when(iso, timeZone) {
  if (!iso) return "";
  return new Intl.DateTimeFormat("en-GB", { weekday: "short", hour: "2-digit", minute: "2-digit", timeZone })
    .format(new Date(iso)).replace(",", "");
}

function money(cents) {
  return typeof cents === "number" ? (cents / 100).toFixed(2) : null;
}

const SIMPLE = {
  already_booked: "You already have a place in this class",
  waitlist_full: "The class and its waitlist are full",
  overlaps_existing_booking: "It overlaps another class you are booked into",
  member_inactive: "Your membership is not active",
  class_cancelled: "This class has been cancelled",
  expires_before_class: "Your credits expire before this class",
};

function one(reason, data, timeZone) {
  switch (reason) {
    case "outside_booking_window":
      return data.opensAt ? `Booking opens ${when(data.opensAt, timeZone)}` : `Booking closed ${when(data.closesAt, timeZone)}`;
    case "no_entitlement": {
      const price = money(data.dropinPriceCents);
      return price && price !== "0.00" ? `Not enough credits (drop-in ${price})` : "Not enough credits for this class";
    }
    case "account_suspended":
      return `Your account is suspended until ${when(data.suspendedUntil, timeZone)}`;
    case "class_full":
      return "The class is full";
    default:
      return SIMPLE[reason] || reason.replace(/_/g, " ");
  }
}

/** The reason a call was refused, for a person: from ConvexError data when there is some, else its message. */
export function reasonText(error, instance) {
  const data = error && typeof error.data === "object" && error.data !== null ? error.data : null;
  const timeZone = instance?.timezone;
  if (data && Array.isArray(data.reasons) && data.reasons.length) {
    const text = data.reasons.map((r) => one(r, data, timeZone)).join("; ");
    return text.charAt(0).toUpperCase() + text.slice(1);
  }
  if (data && data.code === "not_cancellable") return "The class is over; it can no longer be cancelled";
  if (data && data.code === "check_in_not_open") return `Check-in opens ${when(data.opensAt, timeZone)}`;
  if (data && data.code === "attendance_locked") return "Attendance can no longer be changed for this class";
  const message = String(error?.message || error || "Something went wrong");
  // The client prefixes server messages with "[CONVEX M(path)] [Request ID: …] Server Error"; keep the human part.
  const tail = message.split("Uncaught ").pop().split("\n")[0];
  return tail.replace(/^\w*Error: /, "").replace(/^\[CONVEX [^\]]*\] /, "");
}

export function bookedText(result, instance) {
  if (result && result.status === "waitlisted") {
    return `${instance.name} is full — you joined the waitlist at position ${result.position}`;
  }
  return `Booked: ${instance.name} at ${instance.localTime}`;
}

export function cancelText(result, booking) {
  if (booking.status === "waitlisted") return "You left the waitlist";
  if (result && result.late) return "Cancelled (late cancellation)";
  return result && result.refund ? "Cancelled — credits refunded" : "Cancelled";
}
