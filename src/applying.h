/*-------------------------------------------------------------------------
 *
 * applying.h
 *	  appguard's own writes to protected tables (applying.c)
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPGUARD_APPLYING_H
#define APPGUARD_APPLYING_H

/* Whether the statement that fired the calling trigger is appguard's own write */
extern bool appguard_applying_now(void);

#endif							/* APPGUARD_APPLYING_H */
